"""veil: privacy-preserving machine learning in one composable chain."""

from veil.errors import ConfigError, PrivacyBudgetExceeded, ProtocolError, VeilError

__version__ = "0.1.0"
__all__ = ["ConfigError", "PrivacyBudgetExceeded", "ProtocolError", "VeilError", "__version__"]
