__version__ = "0.1.0"

# The distribution on PyPI: "icc" there is an unrelated project; the import name and the command stay `icc`.
DISTRIBUTION = "icc-runner"
