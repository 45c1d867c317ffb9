"""llavakit: build, train, serve and evaluate LLaVA-family vision-language assistants."""

__version__ = "0.1.0"


def load(path, **kwargs):
    """Rebuild model, processor and template from a llavakit checkpoint folder.

    Imported lazily so that `import llavakit` (and `llavakit --help`) does not pay for torch.
    """
    from llavakit.model.io import load_checkpoint

    return load_checkpoint(path, **kwargs)


__all__ = ["load", "__version__"]
