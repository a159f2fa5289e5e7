"""ptytasks.metrics"""
