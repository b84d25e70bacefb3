"""Answers checked before they are used: language, echoes, loops, citations and their attribution, length."""
