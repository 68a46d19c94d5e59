"""Training, export and torch-side prediction. Everything here needs ``cleancut[train]`` (torch)."""
