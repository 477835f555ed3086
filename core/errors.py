"""The error hierarchy. Each message says what happened and what to do next.

Only main.py and the menu loop catch these; everything else lets them travel.
"""


class WorkbenchError(Exception):
    """Base class of every error a user can act on."""


class StateError(WorkbenchError):
    """A JSON state file is missing, corrupt or of an unknown schema version."""


class DatasetError(WorkbenchError):
    """A dataset is missing, incomplete, or cannot be used for what was asked."""


class CollectError(WorkbenchError):
    """A collector could not bring the data in."""


class TrainingError(WorkbenchError):
    """A training run could not start, resume or finish."""


class DeviceError(WorkbenchError):
    """The device asked for (MEDANOMALY_DEVICE) is not there."""


class ExportError(WorkbenchError):
    """A model could not be exported or failed its checks."""


class UnknownNameError(WorkbenchError):
    """A registry was asked for a name it does not hold."""


class InvalidNameError(WorkbenchError):
    """A user-given name cannot be used (it could point outside the workspace, or is malformed)."""


class WorkspaceError(WorkbenchError):
    """The workspace cannot be used: a path outside it, no permission, or another process is writing."""


class BusyError(WorkspaceError):
    """Another process is writing the same dataset, run or export."""


class BackupError(WorkbenchError):
    """A backup cannot be written, or an archive cannot be restored (damaged, changed, not a backup)."""
