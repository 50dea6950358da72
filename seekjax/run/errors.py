"""The set-up's one error type, shared by `setup` and its parts (helper_setup, privacy_setup)."""


class RunSetupError(ValueError):
  """A config that names something that does not exist (path, task, helper kind)."""
