"""Pure domain rules of c2s-api: no I/O, imports only the stdlib, msgspec and phonenumbers.

Import from the modules (``domain.documents``, ``domain.phones``, ``domain.emails``,
``domain.names``, ``domain.dossier``, ``domain.message``, ``domain.errors``).
"""

from __future__ import annotations

__all__: list[str] = []
