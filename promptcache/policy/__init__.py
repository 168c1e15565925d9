"""The PromptPolicy spec: one schema for the sidecar's policy file, the CRD and the CLI.

``schema`` holds the pydantic models (and which text references each place allows);
``sources`` finds a policy's text references and inlines them, whoever reads them (a
local file, the operator's ConfigMaps); ``loading`` reads a policy file (YAML, either a
bare spec or a whole ``PromptPolicy`` object) and resolves its texts from files.
"""

from promptcache.policy.loading import (
    LoadedPolicy,
    PolicyError,
    describe_validation_error,
    load_policy_file,
    parse_policy,
    read_yaml_file,
)
from promptcache.policy.schema import (
    Breakpoints,
    ContentSource,
    ContextSource,
    ContextVariable,
    Match,
    PolicySpec,
    PricingOverride,
    StaticBlock,
    VolatilePattern,
    VolatileSpec,
    parse_duration,
)

__all__ = [
    "Breakpoints",
    "ContentSource",
    "ContextSource",
    "ContextVariable",
    "LoadedPolicy",
    "Match",
    "PolicyError",
    "PolicySpec",
    "PricingOverride",
    "StaticBlock",
    "VolatilePattern",
    "VolatileSpec",
    "describe_validation_error",
    "load_policy_file",
    "parse_duration",
    "parse_policy",
    "read_yaml_file",
]
