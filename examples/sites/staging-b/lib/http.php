<?php
// HTTP helpers. Replaces lib/redirect.php of 4.x.
function acme_is_local_path(string $to): bool {
    return $to !== '' && $to[0] === '/' && !str_starts_with($to, '//') && !str_contains($to, '\\');
}

function acme_redirect(string $to, int $status = 303): void {
    header('Location: ' . (acme_is_local_path($to) ? $to : '/'), true, $status);
    exit;
}

function acme_redirect_back(): void {
    acme_redirect((string) ($_GET['return'] ?? '/'));
}
