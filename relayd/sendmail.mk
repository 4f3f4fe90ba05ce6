# spfgate-sendmail: the sendmail(1) interface for local programs.
