"""ptytasks.engines"""
