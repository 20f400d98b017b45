"""User-facing errors.

A :class:`InputError` carries exactly one clear sentence that names the file and the
fault. The CLI prints it and exits non-zero; the web app answers it with a 4xx.
"""

from __future__ import annotations


class BrainTumorError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(BrainTumorError, ValueError):
    """Bad input from the user: a missing modality, a truncated file, wrong labels..."""
