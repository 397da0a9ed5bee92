"""pskd.benchmarks: the benchmark harness behind ``pskd-bench`` and ``make bench``.

A suite (YAML in ``suites/``) names tasks x models x methods x seeds; :mod:`.suite` validates it, :mod:`.jobs`
expands it into jobs, :mod:`.executors` runs them (locally, under torchrun, or on Slurm via submitit) through the
adapters' own command lines (:mod:`.tasks`), and :mod:`.aggregate`, :mod:`.report` and :mod:`.plots` turn the
jobs' ``metrics.json`` files into tables and figures. The harness never imports an adapter.
"""
