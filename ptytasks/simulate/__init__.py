"""ptytasks.simulate"""
