import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "test_plugins"))

from batch_fixtures import *  # noqa: F403  (session fixtures: synth, test_plugins, plugin_dirs, slide)
