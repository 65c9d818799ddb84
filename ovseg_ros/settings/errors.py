"""SettingsError: the one error every settings reader raises (config, params files, node
options), in a module of its own so that none of them imports another for it."""


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message says which and why."""
