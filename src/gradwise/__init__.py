"""gradwise: the playbook of training neural networks, as a PyTorch library."""

__version__ = "0.1.0"
