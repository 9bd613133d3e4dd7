"""The plugin's own warning class (the test suite turns it into an error)."""


class Im2ImUQWarning(UserWarning):
    """A warning about a calibration or a model that the user should read."""
