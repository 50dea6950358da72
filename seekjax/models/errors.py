"""One exception type for every model/checkpoint loading problem, with a one-line message."""


class ModelLoadError(ValueError):
  """A checkpoint, config or tokenizer cannot be loaded. The message names the file."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")
