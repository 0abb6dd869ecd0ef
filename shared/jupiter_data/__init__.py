"""jupiter-data core: settings, logging, ports, adapters and services shared by every function."""
