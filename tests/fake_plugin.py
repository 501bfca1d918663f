"""The fakes (tests/fakes.py) as a hovit-nas plugin: ``HOVIT_NAS_PLUGINS=fake_plugin`` with this
folder on ``PYTHONPATH`` (``fakes.plugin_env()``) registers both in every process of a run (the
CLI, a local Ray instance's workers), so orchestration tests of the command line and of Ray run
without training or timing a model."""
import fakes

fakes.install()
