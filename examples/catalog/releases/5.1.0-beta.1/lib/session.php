<?php
// Starts the visitor session (not on the command line).
if (PHP_SAPI === 'cli') {
    return;
}
session_name('acme_sid');
session_set_cookie_params(['lifetime' => 3600, 'path' => '/', 'httponly' => true, 'samesite' => 'Lax']);
session_start();
