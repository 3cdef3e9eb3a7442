"""One exception type for everything a user can get wrong; its message is one line."""




class PotflowInputError(ValueError):
    """Bad input: a file, a config value or a data field. ``str()`` is the one-line message."""

    def __init__(self, where, message):
        self.where = str(where)
        super().__init__(f"{self.where}: {message}")


class PotflowWriteError(PotflowInputError):
    """An output could not be written (a full disk, a quota): reported in one line the same way."""
