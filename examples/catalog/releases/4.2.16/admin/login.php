<?php
// Administrator sign-in; sends the user back to ?return= afterwards.
define('ACME_ROOT', dirname(__DIR__));
require ACME_ROOT . '/lib/bootstrap.php';

if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $stmt = acme_db()->prepare('SELECT hash FROM users WHERE name = ?');
    $stmt->execute([$_POST['name'] ?? '']);
    if (password_verify($_POST['password'] ?? '', (string) $stmt->fetchColumn())) {
        $_SESSION['admin'] = $_POST['name'];
        acme_redirect_back();
    }
}
acme_render('login', ['title' => 'Sign in']);
