"""imgspec: a declarative, reproducible, budgeted batch pipeline for APIMart's wan2.7 image API.

The pure core, in the order data flows through it::

    load_manifest / parse_manifest  →  expand  →  make_plan
       (YAML + schema → Manifest)     (Instances)   (Plan, against a Lockfile)
"""

from pipeline.errors import ImgspecError, ManifestError
from pipeline.expand import expand
from pipeline.instances import Expansion, Instance
from pipeline.journal import read_lockfile, write_lockfile
from pipeline.lockfile import LockEntry, Lockfile, parse_lockfile
from pipeline.manifest import load_manifest, parse_manifest
from pipeline.plan import Plan, PlanItem, PlanStatus, make_plan
from pipeline.spec import Job, Manifest

__version__ = "0.1.0"

__all__ = [
    "Expansion",
    "ImgspecError",
    "Instance",
    "Job",
    "LockEntry",
    "Lockfile",
    "Manifest",
    "ManifestError",
    "Plan",
    "PlanItem",
    "PlanStatus",
    "__version__",
    "expand",
    "load_manifest",
    "make_plan",
    "parse_lockfile",
    "parse_manifest",
    "read_lockfile",
    "write_lockfile",
]
