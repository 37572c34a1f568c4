"""The error a command shows as a usage error. In its own module so that any module may raise it, and
config_checks may read each field's choices from the module that owns them, without an import cycle."""


class ConfigError(ValueError):
  """A config that cannot work, said in one line naming the field(s). The commands print it as a usage
  error (no traceback: nothing is wrong with the program)."""
