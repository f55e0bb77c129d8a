<?php
// Acme CMS front controller.
define('ACME_ROOT', __DIR__);
require ACME_ROOT . '/lib/bootstrap.php';

switch ($_GET['r'] ?? 'home') {
    case 'search':
        acme_render_file(ACME_ROOT . '/app/search/results.php', ['title' => 'Search']);
        break;
    default:
        acme_render('home', ['title' => acme_config('site_name')]);
}
