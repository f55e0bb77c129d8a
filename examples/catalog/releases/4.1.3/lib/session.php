<?php
// Starts the visitor session.
session_name('acme_sid');
session_set_cookie_params(1800);
session_start();
