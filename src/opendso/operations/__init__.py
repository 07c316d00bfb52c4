"""Control-room applications: alarms, the real-time cycle, switching, outages."""
