"""Sub-commands of the ``braintumor`` CLI, one module each (see :mod:`braintumor.cli`)."""
