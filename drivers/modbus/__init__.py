"""Modbus TCP / RTU / RTU-over-TCP driver (read-only: function codes 1-4 only)."""

from drivers.modbus.driver import ModbusDriver

__all__ = ["ModbusDriver"]
