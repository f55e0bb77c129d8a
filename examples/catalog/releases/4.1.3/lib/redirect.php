<?php
// Sends the visitor back to where they came from after signing in.
function acme_redirect_back(): void {
    $to = $_GET['return'] ?? '/';
    header('Location: ' . $to);
    exit;
}
