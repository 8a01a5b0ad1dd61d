"""Rendering: plan -> text artifacts and desired resources. No side effects."""
