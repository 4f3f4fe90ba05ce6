# relayd: the SMTP front end
