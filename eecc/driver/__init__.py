"""The compile driver: compile_model runs analysis, exits, search and the bundle; executors spread work."""
