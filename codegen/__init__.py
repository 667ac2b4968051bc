"""nnderive's code generator: Jinja2 templates and the NumPy printer over derive's Programs."""


def __getattr__(name: str):
    """`codegen.__version__`, read from the package metadata on first use (importlib.metadata costs
    ~0.15 s to import: not on every command)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib.metadata
    try:
        version = importlib.metadata.version("nnderive")
    except importlib.metadata.PackageNotFoundError:      # run from a source tree that was never installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version
