"""Errors raised for user mistakes.

Every error a user can cause (a bad file, a prompt outside the image, a missing or
foreign checkpoint) is a :class:`KDSAMError`, a ``ValueError`` whose message names the
problem. Front ends (CLI, Slicer, annotator) catch this one class and show its message;
anything else is a bug and keeps its traceback.
"""


class KDSAMError(ValueError):
    """Base class of all user-facing errors."""


class InputError(KDSAMError):
    """An image, volume, mask or prompt that cannot be used."""


class CheckpointError(KDSAMError):
    """A checkpoint that is missing, unreadable, unsafe or of another architecture."""


class NoWeightsError(CheckpointError):
    """No trained weights are installed where the default weights are looked for."""


class SeriesChoiceError(InputError):
    """A folder holds several DICOM series; the user must pick one.

    ``series`` lists ``(series_uid, description, number_of_files)``.
    """

    def __init__(self, message: str, series: list):
        super().__init__(message)
        self.series = series
