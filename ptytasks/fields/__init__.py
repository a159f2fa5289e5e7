"""ptytasks.fields"""
