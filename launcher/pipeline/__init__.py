"""Pipelines: an experiment's STEPS (tokenize -> train -> eval ...) run as one command, each step a job.

    launch pipeline -c configs/experiments/NAME/pipeline.py [--prepare-only] [--dry-run] [--from S] [--only S]

spec.py holds the STEPS model and the seed's rules, load.py reads pipeline.py / pipeline.yaml and the step
configs, prepare.py builds the experiment's datapool once, stepenv.py turns a step into a job (its env file and
runner arguments), state.py decides what is up to date, run.py runs the steps through launcher.api.
Nothing here imports a heavy module: `--dry-run` stays offline and light.
"""
