"""Load a plantwatch TOML file into typed, validated objects, reporting every problem at once.

Every problem is a ``path.to.key: message`` line, with the name of the entry where an array
holds many (``tags[3] (CW.PI01).alarms.hh: must be above h (160.0)``). Unknown keys and
unknown names in named tables are errors with the closest known one as a hint. Each key is
declared once (schema.key), and the reader, the dataclasses and docs/CONFIG.md all use that
declaration; drivers and detector families declare and validate their own parts.
"""

from agent.config.loader import SECTIONS, Config, load, parse, registered_families
from agent.config.models import ModelConfig
from agent.config.schema import ConfigError, Key, Problems, key, non_negative, one_of, positive
from agent.config.sections import AgentSection, AlarmSystemSection, UplinkSection
from agent.config.tags import TagConfig

__all__ = [
    "SECTIONS", "AgentSection", "AlarmSystemSection", "Config", "ConfigError", "Key", "ModelConfig", "Problems",
    "TagConfig", "UplinkSection", "key", "load", "non_negative", "one_of", "parse", "positive", "registered_families",
]
