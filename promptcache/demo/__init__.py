"""``promptcache demo``: the case study's support agent, before and after, on one laptop.

``workload`` and ``corpus`` decide what the users send; ``app`` is the unchanged legacy
application; ``runner`` starts the simulator and the sidecar and drives both arms;
``report`` turns the outcomes into the case study's tables and plots; ``llama`` swaps the
simulator for a real llama.cpp server; ``cli`` is the subcommand.
"""
