<?php
// Per-session form tokens.
function acme_csrf_token(): string {
    if (empty($_SESSION['csrf'])) {
        $_SESSION['csrf'] = bin2hex(random_bytes(16));
    }
    return $_SESSION['csrf'];
}

function acme_csrf_field(): string {
    return '<input type="hidden" name="csrf" value="' . acme_csrf_token() . '">';
}

function acme_csrf_check(): void {
    if (!hash_equals(acme_csrf_token(), (string) ($_POST['csrf'] ?? ''))) {
        http_response_code(400);
        exit('Invalid form token.');
    }
}
