print("meterext")
