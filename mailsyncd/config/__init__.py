"""Load and validate mailsyncd's YAML config into frozen, typed objects.

One module per section, each section's parser beside its frozen class (``frontdoor.py`` holds
``FrontDoor`` and the code that reads ``frontdoor:``); ``_base`` holds what they share; ``root``
reads the file and puts the sections together.  A new setting goes into its section's class, its
checks dict or parser, and ``etc/mailsyncd.yaml``.
"""

from ._base import ConfigError, UnknownDomain
from .database import Database
from .dns import DNS
from .domains import PLANS, Domain
from .endpoint import Endpoint, MasterPasswords
from .folders import FolderRules
from .frontdoor import FrontDoor
from .listen import Address, Listen, TLSFiles
from .notice import Notice
from .root import Config, load_config, parse_config, summary
from .scheduler import Scheduler
from .sync import DeleteLimit, SyncSettings
from .web import Admin, Web

__all__ = [
    "DNS", "PLANS", "Address", "Admin", "Config", "ConfigError", "Database", "DeleteLimit", "Domain", "Endpoint",
    "FolderRules", "FrontDoor", "Listen", "MasterPasswords", "Notice", "Scheduler", "SyncSettings",
    "TLSFiles", "UnknownDomain", "Web", "load_config", "parse_config", "summary",
]
