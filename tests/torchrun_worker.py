"""``cli.main`` with a smaller ``teste`` profile and, optionally, Ctrl+C after a given step.

Run by torchrun (tests/test_distributed.py, benchmarks/gpu_check_distributed.sh)::

    torchrun ... tests/torchrun_worker.py '{"train_items": 8}' STOP_AT treinar --perfil teste ...

``STOP_AT`` >= 0 raises KeyboardInterrupt in every process right after that optimizer
step (and its checkpoint): a deterministic interruption, to test resuming.
"""
import json
import sys
from dataclasses import replace

from llmdefinitions import cli, pipeline, profiles


def main(argv) -> int:
    overrides, stop_at = json.loads(argv[0]), int(argv[1])
    profiles.PROFILES["teste"] = replace(profiles.PROFILES["teste"], **overrides)
    if stop_at >= 0:
        created = pipeline.Run.__post_init__

        def post_init(run):
            created(run)

            def stop(state):
                if state.global_step == stop_at:
                    raise KeyboardInterrupt

            run.on_train_step = stop

        pipeline.Run.__post_init__ = post_init
    return cli.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
