"""One module per pipeline stage, named as the stage: each holds the stage's run_stage."""
