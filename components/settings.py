"""The one setting every component shares: the project image they run in.

RECSYS_IMAGE is read when the components are defined (import time), so set it before compiling:
`RECSYS_IMAGE=registry.example.com/recsys:1.0 recsys pipeline compile`.
"""

from __future__ import annotations

import os

BASE_IMAGE = os.environ.get("RECSYS_IMAGE", "recsys:dev")

# The image already holds kfp and recsys: no pip install at step start (and none into the venv under kfp.local).
COMPONENT_OPTIONS = {"base_image": BASE_IMAGE, "install_kfp_package": False}
