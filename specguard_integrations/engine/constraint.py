"""The constraint type the loop takes (`specguard_integrations.constraint`), under the engine's
name: it sits below the config, which holds a constraint's spec."""

from ..constraint import Constraint, Kind

__all__ = ["Constraint", "Kind"]
