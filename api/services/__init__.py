"""The service layer: one function per operation, called by every dialect's router."""
