"""KServe model server for real-time fraud scoring (see README: status)."""
