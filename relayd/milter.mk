# relayd: the milter client
