"""What every long-running command shares: the distributed context, progress, run directories and
the sharded resumable loop.

- :mod:`.distributed`: ``init_distributed`` / ``DistContext`` (torchrun env, ``shard``, ``barrier``,
  ``gather``, ``on_main``; gloo on CPU, NCCL on GPU).
- :mod:`.progress`: ``progress(total, desc, unit, enabled)``: a bar on a terminal, a log line a minute
  otherwise.
- :mod:`.rundir`: ``atomic_write`` / ``write_json``, ``JsonlWriter`` / ``read_jsonl`` (crash-safe
  appends), ``settings.json`` and ``open_run_dir`` (resume / overwrite / refuse, in one place).
- :mod:`.loop`: ``run_sharded(units, work, store, ctx)``: units in, results out through a store,
  failures recorded, nothing done twice after a resume.
- :mod:`.devices`: device names and the device a process runs on.
"""
