<?php
// Sends the visitor back to where they came from after signing in.
// Hot fix 0003-safe-return-redirect: only local paths are accepted.
function acme_redirect_back(): void {
    $to = (string) ($_GET['return'] ?? '/');
    if ($to === '' || $to[0] !== '/' || str_starts_with($to, '//') || str_contains($to, '\\')) {
        $to = '/';
    }
    header('Location: ' . $to);
    exit;
}
