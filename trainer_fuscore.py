"""placeholder during scaffolding"""
