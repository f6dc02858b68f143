"""Alembic migrations of the catalog (package data: ``imagewright db upgrade`` runs them)."""
