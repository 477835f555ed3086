"""Network definitions and the phase registry (see models.registry)."""

from models.registry import PhaseSpec, create_phase, get_phase_class, list_phases, register_phase, routable_phases

__all__ = ["PhaseSpec", "create_phase", "get_phase_class", "list_phases", "register_phase", "routable_phases"]
